"""Names and defaults the command line shows before it does any work: the prediction settings' choices, the
baselines a user may ask for, the training data and the folder runs go to. Here, free of heavy imports, so that
`bertsent --help` is built at once; the modules that use them import them from here."""

DEFAULT_DATA = "rotten-tomatoes"
RUNS_DIR = "runs"
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# How a text longer than the model's length is cut: keep its head, tail or both, or score every window.
TRUNCATIONS = ("head", "tail", "head+tail", "windows")
BASELINES = ("tfidf",)  # those a user may ask for; majority and uniform come always
