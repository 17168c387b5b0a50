"""The rule engine and its rules: one class per file, each with firing and silent examples."""
