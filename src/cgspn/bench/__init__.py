"""cgspn.bench"""
