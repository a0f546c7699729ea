"""Monitoring the model in service: what a batch looked like and what the model answered, compared
with the champion's reference (its test split) to find drift; the HTML drift report."""
