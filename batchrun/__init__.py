"""batchrun: push large sets of documents and media through an OpenAI-compatible chat API."""

__version__ = "0.1.0"
