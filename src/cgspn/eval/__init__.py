"""cgspn.eval"""
