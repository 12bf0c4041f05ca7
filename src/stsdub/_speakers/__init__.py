"""_speakers"""
