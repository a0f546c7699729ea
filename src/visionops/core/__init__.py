"""The foundation every layer stands on: errors, constants, the typed config, storage, tracking, the
run context and the contracts between the stages."""
