"""The planner: an OpenAI Agents SDK agent that turns a request into a plan.

The only part of saga that imports the Agents SDK (``agents``, ``temporalio.openai_agents``):
the agent (``_agent``), its settings and plugin (``_agent_settings``), the HTTP model
endpoint (``_model_endpoint``) and the offline stand-in model (``_offline_model``).
"""
