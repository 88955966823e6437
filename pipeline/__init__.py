"""tjepa.pipeline"""
