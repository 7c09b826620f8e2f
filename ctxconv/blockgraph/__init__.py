"""The int8 block graph format: IR, the op kernels, .tflite and ONNX, manifest, pipeline.

The torch-free contract between ``ctxconv.export`` (which writes it) and every room that
reads it; imports only numpy, the standard library, flatbuffers, onnx (the writer) and the
flatc-generated TFLite schema module.

* ``ir``: ``BlockGraph`` / ``Tensor`` / ``Op`` / ``Quant``, ``ModelFileError``
* ``tflite.schema``: the generated TFLite schema module (tflite-micro's, else LiteRT's)
* ``tflite.reader.read_tflite``: .tflite bytes -> validated ``BlockGraph`` (damage ->
  ``ModelFileError``), the one reader; ``tflite.writer`` and ``onnx`` write a graph
* ``ops``: one module per op (its options, checks, parameters, reference kernel bit-exact
  with TFLM's); ``ops.SUPPORTED`` lists the op kinds a graph may contain
* ``manifest``: the export manifest's format tag, fields, file digests, validating loader
* ``bundle``: an export directory, loaded and checked; ``pipeline``: blocks run in order
* ``geometry``: a trainable block's shapes and parameter counts
"""
