"""edgecompress runner: compresses a Keras/TensorFlow model into a verified .tflite.

Importing this package does not import TensorFlow; the spec module works without it, so the
operator can share the job-spec schema.
"""

__version__ = "0.1.0"
