"""`engine bench`: engine against reference frameworks on a model file, or load on a live server.

    from engine.bench.runner import bench_model
    result = bench_model("model.onnx", peers=["onnxruntime"], batches=[1, 8], threads=2, runs=30)

See docs/bench.md for the columns and the JSON schema.
"""
