"""Launchers: SageMaker jobs built from our image URIs."""
