"""The web service: a REST API and the Open Inference Protocol (V2) over `oncology_model`.

`model` holds the served model and knows no HTTP; `schemas` decodes and checks requests;
`app` is the thin HTTP transport; `server` runs it.
"""
