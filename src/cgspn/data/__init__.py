"""cgspn.data"""
