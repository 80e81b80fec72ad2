"""naa-guard's pytest plugin: policy files collected as tests, one item per privacy gate."""
