"""The restoration app's own modules (MONAI Label puts the app folder on ``sys.path``)."""
