"""The crash processing pipeline around the walker (docs/processing.md, "The pipeline"): crash ids
from the processing queue, walks in bounded processes with CFI indexes cached like symcaches,
symbolication, signatures, the processed crash beside the raw one, and the crash index."""
