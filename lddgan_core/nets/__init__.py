"""The networks: the NCSN++ generator, the LDM autoencoder, DDGAN's discriminators, and the ops they share
(``ops.py``: each reference op next to its fast form, with the derivation)."""
