"""Services hold the logic of each concept; they know nothing of HTTP or Socket.IO."""
