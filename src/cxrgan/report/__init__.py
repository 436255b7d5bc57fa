"""Plots, comparisons and (later) the HTML report."""
