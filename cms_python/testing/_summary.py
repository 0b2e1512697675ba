"""What `cms sandbox` prints when stopped, and `cms demo` at its end."""

from __future__ import annotations

from .._printable import printable
from ._sandbox import Sandbox


def summary(sandbox: Sandbox) -> str:
    """What `sandbox` recorded, in a few lines for a terminal: counts, each click's attributions, the deferred
    associations. Everything a client sent is escaped (`printable`)."""
    leads, sales, requests = sandbox.leads, sandbox.sales, sandbox.requests
    lines = [f"Recorded: {len(leads)} lead(s) and {len(sales)} sale(s) from {len(requests)} request(s)."]
    for click_id, attributed in sandbox.attributions().items():
        revenue = ", ".join(f"{amount} {currency} cents" for currency, amount in attributed.revenue.items()) or "none"
        lines.append(
            f"  click {printable(click_id)}: {attributed.leads} lead(s), {attributed.sales} sale(s), "
            f"revenue {printable(revenue)}; customers: {printable(', '.join(attributed.customers))}"
        )
    lines.extend(
        f"  deferred association: customer {printable(customer)} -> click {printable(click_id)}"
        for customer, click_id in sandbox.associations.items()
    )
    return "\n".join(lines)
