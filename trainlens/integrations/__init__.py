"""Integrations with training frameworks: `trainlens.integrations.transformers` and
`trainlens.integrations.lightning`. Each imports its framework when it is imported
itself; this package and `import trainlens` import neither."""
