"""The model as it is served: the packaged pyfunc (inputs, TTA, unknown answers), batch scoring of
folders, the smoke test."""
