"""SIP trunks: the PBX as a client of a provider, or of the router or PBX that holds the line.

``config`` is the trunks' part of the configuration (model and checks), ``registration`` keeps
each trunk registered with its provider.
"""
