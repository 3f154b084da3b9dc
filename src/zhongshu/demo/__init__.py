"""The ``demo`` platform: a small fake social platform so everything can be tried offline.

``zhongshu demo`` starts it next to a hub and a worker: QR login (the QR encodes a URL
the demo prints; opening it "scans" the code), then comments, direct messages and posts
for logged-in demo accounts, collected by the ``demo`` worker handlers through the same
path real platforms use.
"""
