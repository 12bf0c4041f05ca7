"""Whole recordings: file dubs, the project file and its runs, sentences, timing reports."""
