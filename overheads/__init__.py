"""overheads"""
