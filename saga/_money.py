"""Money in action inputs: amounts the policy can count and currencies from ISO 4217.

An action declares its money fields with these two types, and the policy reads exactly
those fields of the validated input, the same values the activity receives:

```python
class ChargeInput(BaseModel):
    amount: Amount = Field(gt=0, le=99_999_999)
    currency: Currency
```

``Amount`` is a strict integer in the currency's minor unit (cents): ``"5000"``,
``5000.0`` and ``true`` are refused rather than coerced. ``Currency`` is an active ISO 4217
code in any case, kept in lower case (Stripe's spelling). The catalog refuses an input
model whose field looks like money (``amount``, ``*_amount``, ``*_cents``, ``currency``)
but is not declared with these types, so no action can carry money the policy cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, get_args, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, Strict

# Active ISO 4217 codes (List One), funds and precious-metal codes left out.
CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA
    MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
    PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP
    STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV
    WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)


@dataclass(frozen=True)
class _MoneyField:
    kind: str  # "amount" or "currency"


_AMOUNT = _MoneyField("amount")
_CURRENCY = _MoneyField("currency")


def _not_bool(value: Any) -> Any:
    # Strict mode already refuses a bool for an int; say it in words.
    if isinstance(value, bool):
        raise ValueError("an amount is a whole number of minor units (cents), not true/false")
    return value


def _iso4217(value: str) -> str:
    if value.upper() not in CURRENCIES:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. eur, usd, jpy)")
    return value.lower()


Amount = Annotated[int, BeforeValidator(_not_bool), Strict(), _AMOUNT]
"""An amount in the currency's minor unit (cents): a JSON integer, nothing else."""

Currency = Annotated[str, Strict(), AfterValidator(_iso4217), _CURRENCY]
"""An active ISO 4217 currency code; any case in, lower case out."""


def _marker(annotation: Any, metadata: list[Any]) -> _MoneyField | None:
    for item in metadata:
        if isinstance(item, _MoneyField):
            return item
    if get_origin(annotation) is Annotated:
        return _marker(None, list(get_args(annotation)[1:]))
    for arg in get_args(annotation):  # Optional[Amount] and friends
        found = _marker(arg, [])
        if found is not None:
            return found
    return None


def _looks_like_money(name: str) -> str | None:
    if name == "currency" or name.endswith("_currency"):
        return "currency"
    if name == "amount" or name.endswith(("_amount", "_cents")):
        return "amount"
    return None


@cache
def money_fields(model: type[BaseModel]) -> dict[str, str]:
    """``{field name: "amount" | "currency"}`` of an action input model.

    Raises ``TypeError`` for a field whose name says money but whose type is not
    :data:`Amount` / :data:`Currency`: the policy could not count it.
    """
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        marker = _marker(info.annotation, list(info.metadata))
        expected = _looks_like_money(name)
        if marker is not None:
            out[name] = marker.kind
        if expected is not None and (marker is None or marker.kind != expected):
            kind = "Amount" if expected == "amount" else "Currency"
            raise TypeError(
                f"{model.__name__}.{name} looks like money: declare it as saga.{kind} "
                "so the policy can read it"
            )
    return out
