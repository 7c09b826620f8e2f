"""The int8 block graph format: IR, .tflite reader, manifest schema.

The torch-free contract between ``ctxconv.export`` (which writes it) and
``ctxconv.firmware_sim`` (which reads it); imports only numpy, the standard library,
flatbuffers and the flatc-generated TFLite schema module.

* ``ir``: ``BlockGraph`` / ``Tensor`` / ``Op`` / ``Quant``, ``SUPPORTED_OPS``, ``ModelFileError``
* ``tflite_schema.schema``: the generated TFLite schema module (tflite-micro's, else LiteRT's)
* ``tflite_reader.read_tflite``: .tflite bytes -> validated ``BlockGraph`` (damage ->
  ``ModelFileError``); the one reader used by the export runtimes and the simulator
* ``manifest``: the export manifest's format tag, fields and validating loader
"""
