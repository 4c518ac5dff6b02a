"""l2i: Listen to Interpret — listenable, faithful explanations of audio classifiers."""

__version__ = "0.1.0"
