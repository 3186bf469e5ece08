"""The catalogue part of semantic_eval.jsonl, written by hand: support questions that share a frame
and differ in one product, product kind, intent or attribute (invented brands and products).

Every text below was written by hand; only the pairing is mechanical. A group is one question
(brand, product kind, intent) and its wordings: the first is the stored question, the others are
paraphrases that deserve the same answer. Near misses pair a stored question with a wording of a
group that differs in exactly one slot: the brand ("entity"), the product kind ("kind"), the intent
("intent") or an attribute of the same intent such as a colour or size ("attribute"). Brands split
the data: every group of a brand sits in one split, so held-out questions, products and wordings are
new. Regenerate with `python tests/data/catalogue_questions.py` (keeps the other domains as they are).
"""

from __future__ import annotations

import json
from pathlib import Path

# (split, lang, brand, kind, intent, [stored, paraphrase, ...]); an intent "family:value" is an
# attribute of the family (colour:black / colour:cream).
GROUPS = [
    # ---------------- English, dev ----------------
    ("dev", "en", "Kestrel", "kettle", "track", [
        "How do I track my Kestrel kettle order?",
        "Where can I follow the shipment of the Kestrel kettle I ordered?",
        "hi there, how do i track my kestrel kettle order",
        "Is there a tracking page for my Kestrel kettle delivery?"]),
    ("dev", "en", "Kestrel", "kettle", "register", [
        "How do I register my Kestrel kettle?",
        "Where is the product registration for the Kestrel kettle?",
        "Hello! How do I register my Kestrel kettle? Thank you",
        "how can i sign up my kestrel kettle for product registration"]),
    ("dev", "en", "Kestrel", "kettle", "colour:black", [
        "Does the Kestrel kettle come in black?",
        "Is the Kestrel kettle available in black?",
        "can i get the kestrel kettle in black",
        "Is there a black version of the Kestrel kettle?"]),
    ("dev", "en", "Kestrel", "toaster", "track", [
        "How do I track my Kestrel toaster order?",
        "Where can I check the delivery status of my Kestrel toaster?",
        "how do i track my kestrel toaster order",
        "Hi, what is the tracking page for the Kestrel toaster I ordered?"]),
    ("dev", "en", "Kestrel", "toaster", "register", [
        "How do I register my Kestrel toaster?",
        "Where do I complete product registration for my Kestrel toaster?",
        "how can i register the kestrel toaster",
        "Hey, is there a way to register my Kestrel toaster online?"]),
    ("dev", "en", "Kestrel", "toaster", "warranty", [
        "How long is the warranty on the Kestrel toaster?",
        "What is the warranty period for the Kestrel toaster?",
        "how long does the kestrel toaster warranty last",
        "Hi! For how many years is the Kestrel toaster under warranty?"]),
    ("dev", "en", "Marigold", "kettle", "track", [
        "How do I track my Marigold kettle order?",
        "Where can I follow the delivery of my Marigold kettle?",
        "hello, how do i track my marigold kettle order?",
        "Is there a page where I can track the Marigold kettle I bought?"]),
    ("dev", "en", "Marigold", "kettle", "colour:black", [
        "Does the Marigold kettle come in black?",
        "Can I buy the Marigold kettle in black?",
        "is the marigold kettle available in black",
        "Hi, is there a black Marigold kettle?"]),
    ("dev", "en", "Marigold", "kettle", "colour:cream", [
        "Does the Marigold kettle come in cream?",
        "Is the Marigold kettle available in cream?",
        "can i order the marigold kettle in cream",
        "Is there a cream version of the Marigold kettle?"]),
    ("dev", "en", "Marigold", "kettle", "descale", [
        "How do I descale my Marigold kettle?",
        "What is the best way to remove limescale from the Marigold kettle?",
        "how do i descale the marigold kettle",
        "Hi, can you tell me how to descale my Marigold kettle? Thanks"]),
    ("dev", "en", "Marigold", "stand mixer", "warranty", [
        "How long is the warranty on the Marigold stand mixer?",
        "What is the warranty period of the Marigold stand mixer?",
        "how many years of warranty does the marigold stand mixer have",
        "For how long is my Marigold stand mixer covered by the warranty?"]),
    ("dev", "en", "Marigold", "stand mixer", "return", [
        "Can I return the Marigold stand mixer?",
        "Is it possible to send the Marigold stand mixer back?",
        "can i return my marigold stand mixer",
        "Hello, do you accept returns of the Marigold stand mixer?"]),
    ("dev", "en", "Pelican", "soundbar", "firmware", [
        "How do I update the firmware on my Pelican soundbar?",
        "How can I install the latest firmware on the Pelican soundbar?",
        "how do i upgrade the pelican soundbar firmware",
        "Hi, what is the procedure to update the firmware of my Pelican soundbar?"]),
    ("dev", "en", "Pelican", "soundbar", "return", [
        "Can I return the Pelican soundbar?",
        "Is it possible to send my Pelican soundbar back?",
        "can i return the pelican soundbar",
        "Do you take returns of the Pelican soundbar?"]),
    ("dev", "en", "Pelican", "soundbar", "address", [
        "How do I change the delivery address for my Pelican soundbar order?",
        "Can I update the shipping address on my Pelican soundbar order?",
        "how do i change the delivery address of my pelican soundbar order",
        "Hi, I moved. How can I edit the delivery address for the Pelican soundbar I ordered?"]),
    ("dev", "en", "Pelican", "dehumidifier", "firmware", [
        "How do I update the firmware on my Pelican dehumidifier?",
        "How can I install new firmware on the Pelican dehumidifier?",
        "how do i update the firmware of the pelican dehumidifier",
        "What is the way to upgrade my Pelican dehumidifier firmware?"]),
    ("dev", "en", "Pelican", "dehumidifier", "reset", [
        "How do I factory reset my Pelican dehumidifier?",
        "How can I restore the Pelican dehumidifier to its factory settings?",
        "how do i factory reset the pelican dehumidifier",
        "Hi, what are the steps to do a factory reset on my Pelican dehumidifier?"]),
    ("dev", "en", "Saffron", "soundbar", "firmware", [
        "How do I update the firmware on my Saffron soundbar?",
        "What is the way to install the newest firmware on the Saffron soundbar?",
        "how do i update the saffron soundbar firmware",
        "Hello, how can I upgrade the firmware of my Saffron soundbar?"]),
    ("dev", "en", "Saffron", "soundbar", "address", [
        "How do I change the delivery address for my Saffron soundbar order?",
        "Can I modify the shipping address of my Saffron soundbar order?",
        "how do i change the delivery address on my saffron soundbar order",
        "I gave the wrong address, how can I update it for my Saffron soundbar order?"]),
    ("dev", "en", "Saffron", "dehumidifier", "reset", [
        "How do I factory reset my Saffron dehumidifier?",
        "How can I restore my Saffron dehumidifier to factory settings?",
        "how do i factory reset the saffron dehumidifier",
        "What are the steps for a factory reset of the Saffron dehumidifier?"]),
    ("dev", "en", "Saffron", "dehumidifier", "size:small", [
        "Is there a smaller Saffron dehumidifier?",
        "Does the Saffron dehumidifier come in a smaller size?",
        "is there a smaller version of the saffron dehumidifier",
        "Hi, do you sell a smaller Saffron dehumidifier?"]),
    ("dev", "en", "Saffron", "dehumidifier", "size:large", [
        "Is there a larger Saffron dehumidifier?",
        "Does the Saffron dehumidifier come in a larger size?",
        "is there a larger version of the saffron dehumidifier",
        "Do you sell a larger Saffron dehumidifier?"]),
    ("dev", "en", "Saffron", "dehumidifier", "track", [
        "How do I track my Saffron dehumidifier order?",
        "Where can I see the delivery status of the Saffron dehumidifier?",
        "how do i track the saffron dehumidifier i ordered",
        "Hi, how can I follow the shipment of my Saffron dehumidifier?"]),
    # ---------------- English, test (held out) ----------------
    ("test", "en", "Thistle", "robot mop", "return", [
        "What is the return policy for the Thistle robot mop?",
        "Can I send back the Thistle robot mop if I don't like it?",
        "what's the return policy on the thistle robot mop",
        "Good morning, how do returns work for the Thistle robot mop?"]),
    ("test", "en", "Thistle", "robot mop", "warranty", [
        "Is the Thistle robot mop covered by a warranty?",
        "Does the Thistle robot mop have a warranty?",
        "is there a warranty on the thistle robot mop",
        "Hi, does a warranty come with the Thistle robot mop?"]),
    ("test", "en", "Thistle", "robot mop", "wifi", [
        "How do I connect the Thistle robot mop to my Wi-Fi?",
        "How can I get my Thistle robot mop onto the wireless network?",
        "how do i connect my thistle robot mop to wifi",
        "Hey, what are the steps to link the Thistle robot mop to Wi-Fi?"]),
    ("test", "en", "Thistle", "treadmill", "return", [
        "What is the return policy for the Thistle treadmill?",
        "Can I return the Thistle treadmill if it doesn't suit me?",
        "what is the return policy for the thistle treadmill",
        "Hi, how do returns work for a Thistle treadmill?"]),
    ("test", "en", "Thistle", "treadmill", "assembly", [
        "How do I assemble the Thistle treadmill?",
        "What are the assembly instructions for the Thistle treadmill?",
        "how do i put together my thistle treadmill",
        "Hello, can you explain how to assemble the Thistle treadmill?"]),
    ("test", "en", "Thistle", "treadmill", "warranty", [
        "Is the Thistle treadmill covered by a warranty?",
        "Does the Thistle treadmill come with a warranty?",
        "is the thistle treadmill under warranty",
        "Does my Thistle treadmill have warranty coverage?"]),
    ("test", "en", "Vireo", "robot mop", "wifi", [
        "How do I connect the Vireo robot mop to my Wi-Fi?",
        "How can I join my Vireo robot mop to the wireless network?",
        "how do i connect the vireo robot mop to wifi",
        "Hi, how do I link my Vireo robot mop with my home Wi-Fi?"]),
    ("test", "en", "Vireo", "robot mop", "return", [
        "What is the return policy for the Vireo robot mop?",
        "Can I return the Vireo robot mop after trying it?",
        "what's the return policy for the vireo robot mop",
        "Hello, how do returns work for the Vireo robot mop?"]),
    ("test", "en", "Vireo", "robot mop", "reset", [
        "How do I reset my Vireo robot mop to factory settings?",
        "How can I do a factory reset on the Vireo robot mop?",
        "how do i factory reset my vireo robot mop",
        "Hi, what are the steps to restore factory settings on the Vireo robot mop?"]),
    ("test", "en", "Vireo", "e-reader", "reset", [
        "How do I reset my Vireo e-reader to factory settings?",
        "How can I do a factory reset on the Vireo e-reader?",
        "how do i factory reset the vireo e-reader",
        "What are the steps to restore the Vireo e-reader to factory settings?"]),
    ("test", "en", "Vireo", "e-reader", "colour:white", [
        "Is the Vireo e-reader sold in white?",
        "Can I get the Vireo e-reader in white?",
        "does the vireo e-reader come in white",
        "Hi, is there a white Vireo e-reader?"]),
    ("test", "en", "Vireo", "e-reader", "colour:red", [
        "Is the Vireo e-reader sold in red?",
        "Can I buy the Vireo e-reader in red?",
        "does the vireo e-reader come in red",
        "Is there a red Vireo e-reader?"]),
    ("test", "en", "Wren", "e-reader", "reset", [
        "How do I reset my Wren e-reader to factory settings?",
        "How can I factory reset the Wren e-reader?",
        "how do i reset my wren e-reader to factory settings",
        "Hello, what are the steps for a factory reset of the Wren e-reader? Thanks"]),
    ("test", "en", "Wren", "e-reader", "address", [
        "How do I update the shipping address for my Wren e-reader order?",
        "Can I change the delivery address of my Wren e-reader order?",
        "how do i update the shipping address on my wren e-reader order",
        "I have moved, how can I edit the address for the Wren e-reader I ordered?"]),
    ("test", "en", "Wren", "e-reader", "cancel", [
        "How do I cancel my Wren e-reader order?",
        "Can I still cancel the Wren e-reader I ordered?",
        "how do i cancel my wren e-reader order",
        "Hi, I want to cancel my order for the Wren e-reader, how?"]),
    ("test", "en", "Wren", "dashcam", "address", [
        "How do I update the shipping address for my Wren dashcam order?",
        "Can I change the delivery address on my Wren dashcam order?",
        "how do i change the shipping address of my wren dashcam order",
        "Hi, how can I edit the delivery address for the Wren dashcam I ordered?"]),
    ("test", "en", "Wren", "dashcam", "cancel", [
        "How do I cancel my Wren dashcam order?",
        "Can I still cancel the Wren dashcam I ordered?",
        "how can i cancel my wren dashcam order",
        "Hello, I would like to cancel my Wren dashcam order. How do I do it?"]),
    ("test", "en", "Wren", "dashcam", "model:D20", [
        "Where can I find the manual for the Wren dashcam D20?",
        "Is there a user manual for the Wren dashcam D20?",
        "where can i find the wren dashcam d20 manual",
        "Hi, where do I get the D20 Wren dashcam manual?"]),
    ("test", "en", "Wren", "dashcam", "model:D30", [
        "Where can I find the manual for the Wren dashcam D30?",
        "Is there a user manual for the Wren dashcam D30?",
        "where can i find the wren dashcam d30 manual",
        "Where do I get the D30 Wren dashcam manual?"]),
    ("test", "en", "Zircon", "dashcam", "cancel", [
        "How do I cancel my Zircon dashcam order?",
        "Can I still cancel the Zircon dashcam I ordered?",
        "how do i cancel my zircon dashcam order",
        "Hi, how can I cancel the order for my Zircon dashcam?"]),
    ("test", "en", "Zircon", "dashcam", "address", [
        "How do I update the shipping address for my Zircon dashcam order?",
        "Can I change the delivery address on my Zircon dashcam order?",
        "how do i update the shipping address of my zircon dashcam order",
        "Hello, how do I edit the delivery address for the Zircon dashcam I ordered?"]),
    ("test", "en", "Zircon", "space heater", "warranty", [
        "Is the Zircon space heater covered by a warranty?",
        "Does the Zircon space heater come with a warranty?",
        "is there a warranty on the zircon space heater",
        "Hi, does my Zircon space heater have warranty coverage?"]),
    ("test", "en", "Zircon", "space heater", "cancel", [
        "How do I cancel my Zircon space heater order?",
        "Can I still cancel the Zircon space heater I ordered?",
        "how do i cancel my zircon space heater order",
        "I'd like to cancel my Zircon space heater order, how do I do that?"]),
    ("test", "en", "Zircon", "space heater", "noise", [
        "Why is my Zircon space heater so noisy?",
        "My Zircon space heater is making a loud noise, why?",
        "why is my zircon space heater so noisy",
        "Hi, what makes the Zircon space heater so loud?"]),
    ("test", "en", "Zircon", "treadmill", "noise", [
        "Why is my Zircon treadmill so noisy?",
        "My Zircon treadmill is making a loud noise, why?",
        "why is my zircon treadmill so noisy",
        "Hello, what makes the Zircon treadmill so loud?"]),
    ("test", "en", "Zircon", "treadmill", "assembly", [
        "How do I assemble the Zircon treadmill?",
        "What are the assembly instructions for the Zircon treadmill?",
        "how do i put together the zircon treadmill",
        "Hi, can you explain how to assemble my Zircon treadmill?"]),
    # ---------------- Chinese, dev ----------------
    ("dev", "zh", "青鸾", "电水壶", "track", [
        "青鸾电水壶的订单怎么查物流？",
        "我买的青鸾电水壶，在哪里查询物流信息？",
        "你好，请问青鸾电水壶的快递到哪了",
        "青鸾电水壶发货后怎么查看物流"]),
    ("dev", "zh", "青鸾", "电水壶", "return", [
        "青鸾电水壶可以退货吗？",
        "买的青鸾电水壶能不能退回？",
        "你好，青鸾电水壶支持退货吗",
        "青鸾电水壶不想要了可以退吗？"]),
    ("dev", "zh", "青鸾", "电水壶", "colour:黑色", [
        "青鸾电水壶有黑色的吗？",
        "青鸾电水壶有没有黑色款？",
        "请问青鸾电水壶有黑色可选吗",
        "青鸾电水壶能买到黑色的吗？"]),
    ("dev", "zh", "青鸾", "电饭煲", "track", [
        "青鸾电饭煲的订单怎么查物流？",
        "我买的青鸾电饭煲，在哪里查询物流信息？",
        "你好，青鸾电饭煲的快递到哪了",
        "青鸾电饭煲发货以后怎么查看物流？"]),
    ("dev", "zh", "青鸾", "电饭煲", "return", [
        "青鸾电饭煲可以退货吗？",
        "买的青鸾电饭煲能不能退回？",
        "青鸾电饭煲支持退货吗",
        "您好，青鸾电饭煲不想要了能退吗？"]),
    ("dev", "zh", "青鸾", "电饭煲", "warranty", [
        "青鸾电饭煲保修多久？",
        "青鸾电饭煲的保修期是多长时间？",
        "请问青鸾电饭煲保修几年",
        "青鸾电饭煲的质保期有多久？"]),
    ("dev", "zh", "墨竹", "电水壶", "track", [
        "墨竹电水壶的订单怎么查物流？",
        "我买的墨竹电水壶在哪里查询物流？",
        "你好，墨竹电水壶的快递到哪里了",
        "墨竹电水壶发货后去哪查看物流？"]),
    ("dev", "zh", "墨竹", "电水壶", "colour:黑色", [
        "墨竹电水壶有黑色的吗？",
        "墨竹电水壶有没有黑色款？",
        "请问墨竹电水壶有黑色可以选吗",
        "墨竹电水壶能买到黑色的吗"]),
    ("dev", "zh", "墨竹", "电水壶", "colour:白色", [
        "墨竹电水壶有白色的吗？",
        "墨竹电水壶有没有白色款？",
        "请问墨竹电水壶有白色可选吗",
        "墨竹电水壶能买到白色的吗？"]),
    ("dev", "zh", "墨竹", "空气净化器", "address", [
        "墨竹空气净化器的订单怎么修改收货地址？",
        "下单的墨竹空气净化器能更改收货地址吗？",
        "你好，墨竹空气净化器订单的收货地址怎么改",
        "我搬家了，墨竹空气净化器的收货地址能变更吗？"]),
    ("dev", "zh", "墨竹", "空气净化器", "firmware", [
        "墨竹空气净化器怎么升级固件？",
        "墨竹空气净化器的固件如何更新？",
        "请问墨竹空气净化器怎样升级固件",
        "墨竹空气净化器要怎么更新到最新固件？"]),
    ("dev", "zh", "墨竹", "空气净化器", "reset", [
        "墨竹空气净化器怎么恢复出厂设置？",
        "墨竹空气净化器如何恢复出厂设置？",
        "你好，墨竹空气净化器要怎么恢复出厂",
        "墨竹空气净化器恢复出厂设置的步骤是什么？"]),
    ("dev", "zh", "云雀", "空气净化器", "firmware", [
        "云雀空气净化器怎么升级固件？",
        "云雀空气净化器的固件怎样更新？",
        "请问云雀空气净化器如何升级固件",
        "云雀空气净化器怎么更新到最新的固件？"]),
    ("dev", "zh", "云雀", "空气净化器", "address", [
        "云雀空气净化器的订单怎么修改收货地址？",
        "下单的云雀空气净化器可以更改收货地址吗？",
        "云雀空气净化器订单的收货地址怎么改",
        "您好，我搬家了，云雀空气净化器的收货地址能变更吗？"]),
    ("dev", "zh", "云雀", "蓝牙耳机", "bind", [
        "云雀蓝牙耳机怎么绑定手机？",
        "云雀蓝牙耳机如何和手机绑定？",
        "你好，云雀蓝牙耳机要怎么绑定手机",
        "云雀蓝牙耳机跟手机绑定的方法是什么？"]),
    ("dev", "zh", "云雀", "蓝牙耳机", "unbind", [
        "云雀蓝牙耳机怎么解绑手机？",
        "云雀蓝牙耳机如何和手机解除绑定？",
        "你好，云雀蓝牙耳机要怎么解绑手机",
        "云雀蓝牙耳机跟手机解绑的方法是什么？"]),
    ("dev", "zh", "云雀", "蓝牙耳机", "reset", [
        "云雀蓝牙耳机怎么恢复出厂设置？",
        "云雀蓝牙耳机如何恢复出厂设置？",
        "请问云雀蓝牙耳机要怎么恢复出厂",
        "云雀蓝牙耳机恢复出厂设置的步骤是什么？"]),
    # ---------------- Chinese, test (held out) ----------------
    ("test", "zh", "白鹭", "扫地机器人", "activate", [
        "白鹭扫地机器人怎么激活？",
        "新买的白鹭扫地机器人如何激活？",
        "你好，白鹭扫地机器人要怎么激活",
        "白鹭扫地机器人的激活方法是什么？"]),
    ("test", "zh", "白鹭", "扫地机器人", "refund", [
        "白鹭扫地机器人退款多久到账？",
        "白鹭扫地机器人的退款多长时间能到账？",
        "请问白鹭扫地机器人退款几天到账",
        "我退了白鹭扫地机器人，退款什么时候到账？"]),
    ("test", "zh", "白鹭", "扫地机器人", "exchange", [
        "白鹭扫地机器人可以换货吗？",
        "白鹭扫地机器人能不能换货？",
        "你好，白鹭扫地机器人支持换货吗",
        "白鹭扫地机器人买了以后能换货吗？"]),
    ("test", "zh", "白鹭", "智能门锁", "activate", [
        "白鹭智能门锁怎么激活？",
        "新买的白鹭智能门锁如何激活？",
        "请问白鹭智能门锁要怎么激活",
        "白鹭智能门锁的激活方法是什么？"]),
    ("test", "zh", "白鹭", "智能门锁", "refund", [
        "白鹭智能门锁退款多久到账？",
        "白鹭智能门锁的退款多长时间能到账？",
        "请问白鹭智能门锁退款几天到账",
        "我退了白鹭智能门锁，退款什么时候到账？"]),
    ("test", "zh", "白鹭", "智能门锁", "cancel", [
        "白鹭智能门锁的订单怎么取消？",
        "我想取消白鹭智能门锁的订单，怎么操作？",
        "你好，白鹭智能门锁订单如何取消",
        "白鹭智能门锁下单后还能取消订单吗？"]),
    ("test", "zh", "银杏", "扫地机器人", "activate", [
        "银杏扫地机器人怎么激活？",
        "新买的银杏扫地机器人如何激活？",
        "你好，银杏扫地机器人要怎么激活",
        "银杏扫地机器人的激活方法是什么？"]),
    ("test", "zh", "银杏", "扫地机器人", "exchange", [
        "银杏扫地机器人可以换货吗？",
        "银杏扫地机器人能不能换货？",
        "请问银杏扫地机器人支持换货吗",
        "银杏扫地机器人买了以后还能换货吗？"]),
    ("test", "zh", "银杏", "跑步机", "cancel", [
        "银杏跑步机的订单怎么取消？",
        "我想取消银杏跑步机的订单，怎么操作？",
        "你好，银杏跑步机订单如何取消",
        "银杏跑步机下单后还能取消订单吗？"]),
    ("test", "zh", "银杏", "跑步机", "warranty", [
        "银杏跑步机保修多久？",
        "银杏跑步机的保修期是多长时间？",
        "请问银杏跑步机保修几年",
        "银杏跑步机的质保期有多久？"]),
    ("test", "zh", "银杏", "跑步机", "colour:灰色", [
        "银杏跑步机有灰色的吗？",
        "银杏跑步机有没有灰色款？",
        "请问银杏跑步机有灰色可选吗",
        "银杏跑步机能买到灰色的吗？"]),
    ("test", "zh", "银杏", "跑步机", "colour:白色", [
        "银杏跑步机有白色的吗？",
        "银杏跑步机有没有白色款？",
        "请问银杏跑步机有白色可选吗",
        "银杏跑步机能买到白色的吗？"]),
    ("test", "zh", "海棠", "跑步机", "cancel", [
        "海棠跑步机的订单怎么取消？",
        "我想取消海棠跑步机的订单，怎么操作？",
        "你好，海棠跑步机订单如何取消",
        "海棠跑步机下单后还能取消订单吗？"]),
    ("test", "zh", "海棠", "跑步机", "warranty", [
        "海棠跑步机保修多久？",
        "海棠跑步机的保修期是多长时间？",
        "请问海棠跑步机保修几年",
        "海棠跑步机的质保期有多久？"]),
    ("test", "zh", "海棠", "行车记录仪", "bind", [
        "海棠行车记录仪怎么绑定手机？",
        "海棠行车记录仪如何和手机绑定？",
        "你好，海棠行车记录仪要怎么绑定手机",
        "海棠行车记录仪跟手机绑定的方法是什么？"]),
    ("test", "zh", "海棠", "行车记录仪", "unbind", [
        "海棠行车记录仪怎么解绑手机？",
        "海棠行车记录仪如何和手机解除绑定？",
        "你好，海棠行车记录仪要怎么解绑手机",
        "海棠行车记录仪跟手机解绑的方法是什么？"]),
    ("test", "zh", "海棠", "行车记录仪", "firmware", [
        "海棠行车记录仪怎么升级固件？",
        "海棠行车记录仪的固件如何更新？",
        "请问海棠行车记录仪怎样升级固件",
        "海棠行车记录仪要怎么更新到最新固件？"]),
]

MAX_PER_TWIST = 2  # near misses per stored question and twist


def _twist(g: tuple, h: tuple) -> str | None:
    """The one slot in which group h differs from group g, or None."""
    _, _, gb, gk, gi, _ = g
    _, _, hb, hk, hi, _ = h
    diffs = [name for name, x, y in (("entity", gb, hb), ("kind", gk, hk), ("intent", gi, hi)) if x != y]
    if len(diffs) != 1:
        return None
    if diffs == ["intent"] and gi.split(":")[0] == hi.split(":")[0]:
        return "attribute"
    return diffs[0]


def rows() -> list[dict]:
    out = []
    for n, g in enumerate(GROUPS):
        split, lang, _, _, _, texts = g
        stored = texts[0]
        for t in texts[1:]:
            out.append({"split": split, "lang": lang, "domain": "catalogue", "kind": "paraphrase", "twist": None,
                        "a": stored, "b": t, "same": True})
        used: dict[str, int] = {}
        for m, h in enumerate(GROUPS):
            if h[0] != split or h[1] != lang:
                continue
            twist = _twist(g, h)
            if twist is None or used.get(twist, 0) >= MAX_PER_TWIST:
                continue
            used[twist] = used.get(twist, 0) + 1
            wording = h[5][1 + (n + m) % (len(h[5]) - 1)]  # a paraphrase of the other question, never its stored text
            out.append({"split": split, "lang": lang, "domain": "catalogue", "kind": "near_miss", "twist": twist,
                        "a": stored, "b": wording, "same": False})
    return out


def main() -> None:
    path = Path(__file__).with_name("semantic_eval.jsonl")
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("domain") != "catalogue"]
    lines = kept + [json.dumps(r, ensure_ascii=False) for r in rows()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
