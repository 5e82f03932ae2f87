"""Model preparation: get a model, convert it to OpenVINO IR, compress its weights, keep it on disk.

Entry point for other code: `modelprep.pipeline.ensure_model(name, precision, models_dir)`.
"""
