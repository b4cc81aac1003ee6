"""edgecompress operator: the CompressionJob CRD and its kopf controller."""
