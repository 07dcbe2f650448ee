"""Bring your own agent: your OpenAI Agents SDK agent, its write tools saga steps.

Your workflow, your agent, your instructions and your own tools; one line per catalog
action makes a write tool whose every call is a compensable saga step:
``steps.tool("payments.charge")``. When the agent gives up, the workflow fails or is
cancelled, every step it took is undone in reverse order.

Run it on a saga worker, next to the saga workflow::

    worker = saga.create_worker(client, settings, ledger, extra_workflows=[ShopAgentWorkflow])
    result = await client.execute_workflow(
        ShopAgentWorkflow.run,
        ShopRequest(request="order 2 blue mugs for ana@example.com and charge her card"),
        id="shop-1",
        task_queue=settings.task_queue,
    )

Or run your agent inside the saga workflow itself, in act mode: a factory gets the
saga's tools (the catalog's look-ups and writes, each write call a compensable step) and
the built-in instructions, and returns your agent (:func:`shop_agent`)::

    worker = saga.create_worker(client, settings, ledger, agents={"shop": shop_agent})
    # or, for `saga worker`: SAGA_AGENTS=shop=examples.byo_agent:shop_agent
    saga start --mode act --agent shop "order 2 blue mugs for ana@example.com"

`tests/agent/test_byo_agent.py` runs both with a scripted model.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from agents import Agent, AgentOutputSchema, Runner, Tool, function_tool

    from saga import ActOutput, Policy, SagaSteps


class ShopRequest(BaseModel):
    request: str
    actions: list[str] = Field(
        default_factory=lambda: ["inventory.reserve", "payments.charge", "notify.email"],
        description="The catalog actions the agent may take (each call a saga step).",
    )
    policy: Policy = Field(default_factory=Policy)


class ShopOutcome(BaseModel):
    """The agent's last word."""

    ok: bool = Field(description="True when the order is done; false gives up (all undone).")
    summary: str


class ShopResult(BaseModel):
    summary: str
    steps: list[str]


@function_tool
async def shipping_cost(quantity: int) -> int:
    """Shipping in cents for `quantity` items (a plain tool of yours: it changes nothing)."""
    # async: the SDK runs a sync tool in a thread, which workflow code may not start.
    return 500 + 100 * quantity


SHOP = """\
You run a small shop. Do the customer's order with your tools: reserve the stock, charge
the card (amounts in cents, shipping included), then email the customer."""
INSTRUCTIONS = f"""{SHOP} If something cannot be done, finish with ok=false and say why:
everything you did is then undone."""


def shop_agent(tools: list[Tool], instructions: str) -> Agent[None]:
    """The shop agent inside the saga workflow (``create_worker(agents={"shop": ...})``):
    the saga's tools and your own, your role before the saga's rules. ``ActOutput`` lets
    it give up (``done=false``: every step is undone); any other output means done."""
    return Agent[None](
        name="shop",
        instructions=f"{SHOP}\n\n{instructions}",
        tools=[shipping_cost, *tools],
        output_type=AgentOutputSchema(ActOutput, strict_json_schema=True),
    )


@workflow.defn
class ShopAgentWorkflow:
    @workflow.run
    async def run(self, inp: ShopRequest) -> ShopResult:
        async with SagaSteps.open(inp.policy) as steps:
            agent = Agent[None](
                name="shop",
                instructions=INSTRUCTIONS,
                tools=[shipping_cost, *(steps.tool(action) for action in inp.actions)],
                output_type=AgentOutputSchema(ShopOutcome, strict_json_schema=True),
            )
            result = await Runner.run(agent, inp.request, max_turns=12)
            outcome = result.final_output_as(ShopOutcome)
            if not outcome.ok:  # leaving the block with an error undoes every step
                raise ApplicationError(f"the agent gave up: {outcome.summary}", non_retryable=True)
            return ShopResult(summary=outcome.summary, steps=steps.steps)
