"""tjepa.eval"""
