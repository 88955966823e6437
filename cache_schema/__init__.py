"""tjepa.cache_schema"""
