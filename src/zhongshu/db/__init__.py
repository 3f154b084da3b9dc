"""Storage: the schema, the engine and the stores. Nothing above ``services`` imports this
package except the app factory and the CLI, which build a ``Database`` and hand it down."""
