"""tjepa.train"""
