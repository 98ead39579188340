"""Test scaffolding: tiny random models, synthetic head activations and the official datasets' layouts
written from generated clips. Tests, benchmarks and the smoke tables use it; the product never imports
it (an import-linter contract in pyproject.toml says so), except the smoke table builder
(calm.tables.smoke). Backbone configs name a tiny model by its dotted name (`tiny_model`).
"""
