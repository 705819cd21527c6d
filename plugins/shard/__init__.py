"""(not implemented yet)"""
