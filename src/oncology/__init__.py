"""oncology: the pipeline around `oncology_model` - the trainer, the web service and the CLI."""
