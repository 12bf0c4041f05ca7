"""_recordings"""
