"""The chat workload of ``bench/runtime_throughput.py --workload chat``: requests that look like real use of a small
instruct model, rendered with the model's own chat template.

Why a written set: the tiny model's workload (prompts cut from ``argparse.py``) is source code, which n-gram
speculation predicts well and which nobody sends to a chat model. Here every request is a conversation a user
might have: questions, short explanations, lists, rewriting a sentence, summarising a short paragraph, a few with
a system prompt of their own and a few with an earlier turn. Paragraph tasks are built from templates (each short
paragraph asked three ways), the rest are written out; all are distinct, so no server gains from a prompt cache.
Rendered for SmolLM2 they are 28-116 tokens, 68 on average (its template adds a default system prompt where a
conversation has none). The order is shuffled with a fixed seed so that long and short requests mix at any concurrency.

Pure: no model, no I/O; :func:`render` takes the tokenizer.
"""

from __future__ import annotations

import random

QUESTIONS = [
    "What is the capital of Australia?",
    "How many minutes should I boil an egg for a soft yolk?",
    "Why is the sky blue?",
    "What is the difference between weather and climate?",
    "Is it better to water plants in the morning or in the evening?",
    "What does a project manager do?",
    "How do vaccines help the body fight disease?",
    "What is a good way to start learning a new language as an adult?",
    "Why do cats purr?",
    "What should I pack for a three-day hiking trip?",
    "How can I tell if a melon is ripe?",
    "What is inflation, in simple terms?",
    "Who wrote the novel Pride and Prejudice?",
    "How far is the Moon from the Earth?",
    "What is the boiling point of water at the top of a high mountain, and why is it different?",
]

EXPLANATIONS = [
    "Explain photosynthesis in two or three sentences.",
    "Explain what a mortgage is to someone who has never bought a house.",
    "Briefly explain how a bicycle's gears make pedalling easier uphill.",
    "Explain the rules of chess castling in a short paragraph.",
    "Explain why bread goes stale.",
    "Explain what a password manager is and why people use one.",
    "In a few sentences, explain how the heart pumps blood around the body.",
    "Explain the difference between a virus and a bacterium.",
    "Explain what compound interest is with a simple example.",
    "Explain why leaves change colour in autumn.",
]

LISTS = [
    "List five healthy breakfast ideas.",
    "Give me three tips for sleeping better.",
    "List the planets of the solar system in order from the Sun.",
    "Name four ways to save energy at home.",
    "Give me a short packing list for a beach holiday.",
    "List three questions I could ask at the end of a job interview.",
    "Suggest five names for a small bakery.",
    "List the main steps to plant a tree.",
    "Give me four ideas for a rainy afternoon with children.",
    "List three common mistakes people make when writing emails.",
]

REWRITES = [
    "Rewrite this sentence to sound more polite: Send me the report now.",
    "Make this sentence shorter: In the event that it rains tomorrow, we will be moving the picnic to a later date.",
    "Rewrite this in a formal tone: Hey, can't make it to the meeting, something came up.",
    "Correct the grammar in this sentence: Me and him goes to the market every sundays.",
    "Turn this note into a friendly text message: Dinner at 7. Bring the salad. Don't be late.",
    "Rewrite this for a ten-year-old: The committee postponed the decision pending further review.",
    "Write a one-sentence product description for a reusable water bottle.",
    "Write a short thank-you note to a neighbour who watered my plants while I was away.",
]

PARAGRAPHS = [
    "The town library opened a new reading room last month. It has large windows, comfortable chairs and a corner "
    "for children with picture books and puzzles. Since the opening, the number of visitors on weekday afternoons "
    "has doubled, and the librarians have started a weekly story hour on Saturday mornings.",
    "Honeybees communicate the location of food through a movement known as the waggle dance. A returning forager "
    "walks in a figure-eight pattern on the honeycomb, and the angle of the straight part of the dance tells the "
    "other bees the direction of the flowers relative to the sun, while its length tells them the distance.",
    "Our team moved from weekly status meetings to a short written update every Friday. Each person writes what "
    "they finished, what they are working on and what is blocking them. The change saved about an hour a week for "
    "everyone, and problems are now raised earlier because they are written down instead of forgotten.",
    "Tomatoes need at least six hours of direct sunlight a day to produce fruit. They grow best in well-drained "
    "soil and should be watered deeply but not too often, since wet leaves invite disease. Supporting the plants "
    "with stakes or cages keeps the fruit off the ground and makes harvesting easier.",
    "The old railway line between the two villages closed in the 1960s. Volunteers have since turned the route "
    "into a walking and cycling path of twelve kilometres, with benches, information boards about local wildlife "
    "and a small cafe in the former station building at the halfway point.",
    "Regular exercise does not have to mean long sessions at the gym. Studies suggest that a brisk walk of thirty "
    "minutes on most days lowers the risk of heart disease, improves mood and helps with sleep. Taking the stairs "
    "and cycling to work are easy ways to add movement to a busy day.",
    "The customer wrote that her order arrived two days late and one of the three mugs was broken. She asked for a "
    "replacement for the broken mug rather than a refund, and mentioned that she had bought from the shop before "
    "and had always been happy with the service.",
    "Glaciers form where more snow falls in winter than melts in summer. Over many years the snow is pressed into "
    "dense ice, which slowly flows downhill under its own weight. As they move, glaciers carve valleys, carry "
    "rocks over long distances and leave behind lakes when they retreat.",
    "The city council approved a plan to plant five thousand trees over the next three years. The trees will be "
    "planted mainly along busy roads and in school grounds, where they are expected to provide shade, reduce "
    "noise and improve air quality. Residents can also request a tree for their street through the council's "
    "website.",
    "Sourdough bread is made with a starter, a mixture of flour and water that contains wild yeast and bacteria. "
    "The starter is fed regularly and gives the dough its rise and its slightly sour taste. Because the "
    "fermentation is slow, making sourdough takes longer than using commercial yeast, but many bakers say the "
    "flavour is worth the wait.",
    "At the annual general meeting, the club's treasurer reported that membership grew by fifteen percent and "
    "that the new clubhouse roof was paid for without a loan. Members voted to keep the yearly fee unchanged and "
    "to start a junior section for players under twelve.",
    "Octopuses are known for their intelligence. They can open jars, find their way through mazes and recognise "
    "individual people. Each of their eight arms contains many nerve cells, which allows the arms to react to "
    "touch and taste on their own while the brain decides the overall plan.",
]

PARAGRAPH_TASKS = [
    "Summarise the following paragraph in one sentence.\n\n{text}",
    "Read this and list the three most important points:\n\n{text}",
    "{text}\n\nGive this paragraph a short title, then explain its main idea in two sentences.",
]

WITH_SYSTEM = [
    ("You are a patient cooking assistant. Keep answers short and practical.",
     "I have rice, two eggs, an onion and some frozen peas. What can I make for dinner?"),
    ("You are a travel guide for first-time visitors to Europe.",
     "I have one free day in Paris. How should I spend it?"),
    ("You answer in exactly one sentence.", "Why do we have leap years?"),
    ("You are a helpful assistant for a small hardware shop.",
     "What kind of screws should I use to hang a heavy mirror on a plaster wall?"),
    ("You are a friendly tutor who helps students understand mathematics.", "What is a prime number?"),
    ("You write clear and concise emails.",
     "Write a short email to my manager asking to move our one-to-one meeting from Tuesday to Wednesday."),
]

MULTI_TURN = [
    [("user", "I want to start running. Where do I begin?"),
     ("assistant", "Start with short runs of ten to fifteen minutes, three times a week, mixing running and walking."),
     ("user", "How long before I can run five kilometres without stopping?")],
    [("user", "What is the tallest mountain in the world?"),
     ("assistant", "Mount Everest, at about 8,849 metres above sea level."),
     ("user", "And which is the tallest in Africa?")],
    [("user", "Can you recommend a houseplant that is hard to kill?"),
     ("assistant", "A snake plant is a good choice: it tolerates low light and needs water only every few weeks."),
     ("user", "Is it safe to keep around cats?")],
]


def conversations(seed: int = 0) -> list[list[dict]]:
    """Every conversation of the set (distinct), as chat messages, in a fixed shuffled order."""
    out: list[list[dict]] = []
    for text in QUESTIONS + EXPLANATIONS + LISTS + REWRITES:
        out.append([{"role": "user", "content": text}])
    for task in PARAGRAPH_TASKS:
        for paragraph in PARAGRAPHS:
            out.append([{"role": "user", "content": task.format(text=paragraph)}])
    for system, user in WITH_SYSTEM:
        out.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
    for turns in MULTI_TURN:
        out.append([{"role": role, "content": content} for role, content in turns])
    random.Random(seed).shuffle(out)
    return out


def requests(count: int, seed: int = 0) -> list[list[dict]]:
    """``count`` conversations for a run: the set in its shuffled order, from the start again past its end."""
    pool = conversations(seed)
    return [pool[i % len(pool)] for i in range(count)]


def render(tokenizer, messages: list[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation ready for the assistant's turn, exactly as ``apply_chat_template`` gives
    them (sent as ids, so every server sees the same input whatever its own template engine)."""
    return [list(tokenizer.apply_chat_template(m, add_generation_prompt=True, return_dict=True)["input_ids"])
            for m in messages]


# Which llama-server weights each of our DTYPEs is held against: the same bytes per weight.
SAME_PRECISION = {"float32": "f32", "bfloat16": "f16", "float16": "f16"}

# goal -> (the run, its figure, the llama-server weights held against (None: the same precision as ours), the bar
# on ours / theirs, whether higher is better)
GOALS = {
    "32_clients>=1.3x_llama_same_precision": ("fixed", "tokens_per_s", None, 1.3, True),
    "single_stream>=1.0x_llama_f16": ("single_stream", "tokens_per_s", "f16", 1.0, True),
    "natural_length>=1.5x_llama_f16": ("natural", "tokens_per_s", "f16", 1.5, True),
    "ttft_p99_32_clients<=llama_same_precision": ("fixed", "ttft_p99_s", None, 1.0, False),
}


def ratios_and_goals(servers: dict[str, dict]) -> tuple[dict, dict]:
    """The issue's goals for each of our DTYPEs against llama-server, measured in the same run.

    ``servers`` maps a server's name (``ours_<dtype>``, ``llama_server_<f32|f16|q4_1>``) to its runs (``fixed``:
    32 clients, fixed length; ``single_stream``; ``natural``: 32 clients, stops at EOS), or to ``{"error": ...}``.
    Returns the ratios, ours / theirs per goal and DTYPE (for TTFT p99 below 1 is better), and the goals as
    booleans per DTYPE (:data:`GOALS`); None where either server has no figure.
    """
    def figure(name: str, run: str, key: str) -> float | None:
        result = servers.get(name)
        return None if not result or "error" in result else result[run][key]

    ratios: dict[str, dict] = {goal: {} for goal in GOALS}
    goals: dict[str, dict] = {goal: {} for goal in GOALS}
    for name in servers:
        if not name.startswith("ours_"):
            continue
        dtype = name.removeprefix("ours_")
        for goal, (run, key, weights, bar, higher_is_better) in GOALS.items():
            ours = figure(name, run, key)
            theirs = figure(f"llama_server_{weights or SAME_PRECISION[dtype]}", run, key)
            if not ours or not theirs:
                ratios[goal][dtype] = goals[goal][dtype] = None
                continue
            ratios[goal][dtype] = round(ours / theirs, 2)
            goals[goal][dtype] = ours / theirs >= bar if higher_is_better else ours / theirs <= bar
    return ratios, goals
