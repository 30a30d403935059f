"""cgspn.layers"""
