"""cgspn.models"""
