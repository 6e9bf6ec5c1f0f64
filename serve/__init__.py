"""Ray Serve application: one FastAPI router in front of one autoscaled deployment per model."""
