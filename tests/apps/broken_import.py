raise ValueError("this module fails on import")
