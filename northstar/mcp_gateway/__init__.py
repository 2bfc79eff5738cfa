"""The MCP gateway: tool model, catalogue, transports and the REST front end."""
