"""The edgecompress contract: every document that crosses a boundary, as typed pydantic models.

- ``spec``: the CompressionJob spec users write (CRD, runner validation, docs).
- ``rules``: the spec's cross-field rules, each with its message and its CEL twin for the CRD.
- ``report``: ``report.json``, written by the runner next to the ``.tflite``.
- ``summary``: the compact run result in the runner pod's termination message.
- ``progress``: the progress events the runner logs and the operator reads.
- ``status``: the CompressionJob status the operator writes.
- ``exit_codes``: the runner's exit codes, which the Job's podFailurePolicy keys on.

Wire names are camelCase. The operator imports this package and nothing else of the runner.
"""
