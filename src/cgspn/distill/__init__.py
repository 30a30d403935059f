"""cgspn.distill"""
