"""Entry points: `python -m tlres.experiments.<preset>` runs that preset."""
