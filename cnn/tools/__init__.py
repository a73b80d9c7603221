"""Command-line tools that inspect the model zoo: ``python -m cnn.tools.macs NAME`` (parameters and
multiply-accumulates) and ``python -m cnn.tools.receptive_field NAME`` (receptive field, jump and MACs per stage)."""
