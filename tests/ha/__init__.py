"""Tests of the callflip Home Assistant integration."""
