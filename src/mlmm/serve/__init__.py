"""Put a trained model to use: ``mlmm predict`` on files, an HTTP service, ONNX export.

Everything here answers through :meth:`mlmm.TrainedModel.predict_raw`, the one predict path.
The HTTP service (:mod:`mlmm.serve.app`) needs the ``serve`` extra and ONNX export
(:mod:`mlmm.serve.export`) the ``export`` extra; :mod:`mlmm.serve.predict` needs neither.
"""

from mlmm.serve.predict import predict_table, read_input, write_table

__all__ = ["predict_table", "read_input", "write_table"]
