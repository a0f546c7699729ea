"""The stages as the DAGs call them: adapters that check a typed contract on entry, call one domain
function and return the next contract; the run summary."""
